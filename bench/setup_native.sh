#!/usr/bin/env bash
# The virtualenv of the native side of bench/openai_agents_vs_native.py: Temporal's own
# OpenAI Agents plugin (temporalio-openai-agents), which pins openai-agents < 0.23 and so
# cannot share Tether's environment. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv-native
.venv-native/bin/pip install -q -c native-constraints.txt temporalio-openai-agents temporalio pluggy obstore
