"""``python -m engine``: run the engine process on stdin/stdout."""

from engine.server import main

if __name__ == "__main__":
    main()
