"""Wiring, not stages: the stage commands' jobs (`stages.run_job`), the resumable `m3w build`, the runner choice, the
demo.
"""
