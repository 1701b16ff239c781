"""Workers: run DenseNAS jobs (search, retrain, profile) in-process or on Ray, and report them
to the control plane over HTTP. See docs/DESIGN.md for the contracts."""
