"""The contracts every StateProvider kind passes (run by tests/state/test_contract.py)."""
