"""Legacy billing app replica and its end-to-end tests (see app.py, conftest.py)."""
