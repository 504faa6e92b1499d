"""The bundled demo site, and the one-command demo that runs the whole loop against it."""
