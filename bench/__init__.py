"""Benchmarks and load generators (DESIGN section 2): not part of the test suite."""
