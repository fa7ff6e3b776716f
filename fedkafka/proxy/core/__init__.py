"""The proxy's I/O core: listener, client connections, upstream pool, physical metadata, dispatch."""
