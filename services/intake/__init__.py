"""Intake: accepting events exactly once, and computing (in the same transaction) which
workflows each must reach."""
