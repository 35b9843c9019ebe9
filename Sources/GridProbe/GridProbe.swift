// GridProbe
