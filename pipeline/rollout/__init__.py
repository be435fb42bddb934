"""Progressive delivery: one plan (plan.py), executed locally (local.py) or rendered for Argo Rollouts."""
