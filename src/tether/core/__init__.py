"""Tether's framework-neutral core: the Step / Run contract and its Temporal realization."""
