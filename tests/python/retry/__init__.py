"""Lock-error retry and transaction replay tests (see conftest.py, retry_support.py)."""
