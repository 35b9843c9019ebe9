// GridAgent
