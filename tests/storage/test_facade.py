"""StorageManager is a facade: it validates at the door and runs one core operation on its workers.

The rules, the order of a protocol's steps and the lifecycle arithmetic have their owners
(rules, protocol, accounts, housekeeping, archive, restore); the manager keeps no synchronous
twin of its coroutines, and the one mechanism that runs a core method off the event loop is
``abby_core.storage.workers``.
"""

from __future__ import annotations

import inspect

import abby_core.storage.manager as manager_module
from abby_core.storage import StorageManager


def test_the_manager_keeps_no_private_helpers() -> None:
    private = {
        name
        for name, member in vars(StorageManager).items()
        if name.startswith("_") and not name.startswith("__") and inspect.isfunction(member)
    }
    assert private == set()


def test_the_manager_module_holds_no_rule_of_its_own() -> None:
    helpers = {
        name
        for name, member in vars(manager_module).items()
        if inspect.isfunction(member) and member.__module__ == manager_module.__name__
    }
    assert helpers <= {"_utcnow"}, helpers
