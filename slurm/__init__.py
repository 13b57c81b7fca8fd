"""The cluster layer: the only code that imports submitit or runs sbatch, squeue, scontrol or sacct.

    cluster.py      cluster settings and site profiles -> submitit executors (SLURM or local)
    queue.py        what SLURM says about our jobs; its job states, grouped once
    tasks.py        the picklable callables submitit runs: a member, the ensemble evaluation
    launch_plan.py  jobs.launch's command line -> a checked plan (nothing written)
    launch.py       carry the plan out: write the run folder, submit or run here
    submit.py       the member array and the dependent ensemble job, on SLURM or locally
    status.py       where a run stands, per member and for the ensemble job
    sweep.py        the sweep's workers as tasks, on SLURM or here, and its results
    bench.py        the bench as one SLURM job
    records.py      what a launch records about itself (time, code revision)
    local/          scripts that start and stop a single-node SLURM for tests and laptops
    sites/          site profiles (partition, GRES, cores, time limits, setup lines)

The ML library (``videns``) knows nothing of this package; entry points (``jobs``) call it.
"""
