"""Beyond one device: sync to a central PostgreSQL, and archives classified on Dask."""
