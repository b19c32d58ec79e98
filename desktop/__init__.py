"""The VisionDesk desktop application and command line: Qt front end and engine clients."""
