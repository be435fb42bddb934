"""Progressive delivery: one plan (plan.py), judged by analysis.py, executed by engine.py: rehearsed
locally (rehearsal.py) or rendered for Argo Rollouts (pipeline/deploy/render.py)."""
