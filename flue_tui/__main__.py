def main() -> int:
    raise SystemExit("flue-tui is not built yet")
