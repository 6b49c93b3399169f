"""roboloop's tests, one folder per package of src/roboloop (a package, so that modules in different folders may share a basename)."""
