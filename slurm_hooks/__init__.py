"""carme.slurm_hooks: what Slurm runs (prolog, epilog, trigger) to report Carme jobs' state changes."""
