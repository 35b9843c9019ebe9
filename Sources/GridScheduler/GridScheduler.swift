// GridScheduler
