"""Shared by every stage: drop counters (`accounting`), the stage registry (`stages`), the failure breaker, dependency
preflight, progress tally, atomic writes.
"""
