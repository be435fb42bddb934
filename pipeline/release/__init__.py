"""Release policy: what a release changes for the clients of the one serving (compatibility), which
releases failed (quarantine), and when a release may enter an environment (promotion policy, fast
rollback). docs/environments.md and docs/rollout.md explain them; the stages apply them."""
