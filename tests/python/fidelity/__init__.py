"""Differential fidelity suite: the same steps direct to MariaDB and through thaw."""
