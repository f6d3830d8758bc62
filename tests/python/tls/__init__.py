"""Backend TLS tests (see conftest.py, tls_support.py)."""
