"""Contract suites: one table of cases run against every implementation of one rule."""
