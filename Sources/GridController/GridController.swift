// GridController
