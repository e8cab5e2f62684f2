"""The offline demo's own code: synthetic street scenes in the GTA5 and Cityscapes layouts
(`python -m proda.demo.synthetic`), so that every ProDA stage runs without a download, and the
runner of a seed's test rows in one process (`python -m proda.demo.test_rows`).
The real datasets' loaders are in proda/data/."""
