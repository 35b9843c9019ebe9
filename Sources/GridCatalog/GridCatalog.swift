// GridCatalog
