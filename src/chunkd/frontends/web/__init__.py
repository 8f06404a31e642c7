"""The browser upload page (``/``) and upload links (``/v1/upload-links``)."""
