// GridCLI
