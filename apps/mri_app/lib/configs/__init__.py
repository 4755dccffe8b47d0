"""One TaskConfig per task; the module name is the task name."""
