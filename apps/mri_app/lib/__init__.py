"""mri-label MONAI Label app library: task configs, infer and train hooks, shared transforms."""
