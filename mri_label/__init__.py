"""mri-label: MONAI Label app and tools for brain MRI."""
