"""Integrations of Tether with other systems (import the submodule you need)."""
