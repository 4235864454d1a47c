"""Find the bird and name it: photo bytes in, an identification out.

Pure: preprocessing, EXIF, models (TFLite runtime, bundles, species classifier, bird gate,
detector), region search and the decision rules. Nothing here opens a database, reads the
configuration file or prints; an import-linter contract in the tests holds it so.
"""
