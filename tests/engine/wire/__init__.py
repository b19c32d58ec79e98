"""Local HTTP servers that speak the cloud providers' wire formats, for tests of the real SDKs."""
