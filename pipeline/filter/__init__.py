"""Stage 3, filter: the cheap page gate and the language/quality/safety document filters on Beam (`transforms`); the
rules are in `filters/`.
"""
