"""Train tasks: MONAI Label ``BasicTrainTask`` hooks over the shared transforms and datalists."""
