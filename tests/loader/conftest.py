from tests.faults.conftest import scenario  # noqa: F401  (crash-prone and process-wide: one interpreter per test)
