"""The statement corpus, every driver, direct vs through thaw: 0 differences."""

import pytest

from .corpus import GROUPS, MULTI
from .drivers import ALL_DRIVERS, MULTI_DRIVERS, factory
from .harness import differential

CASES = [(d, g) for g in GROUPS for d in ALL_DRIVERS] + [(d, "multi") for d in MULTI_DRIVERS]


@pytest.mark.parametrize("driver,group", CASES, ids=[f"{g}-{d}" for d, g in CASES])
def test_corpus(driver, group, db_name, direct_addr, thaw_addr):
    steps = MULTI if group == "multi" else GROUPS[group]
    differential(driver, factory(driver), steps, db_name, direct_addr, thaw_addr)
