"""The app both agents work on: impl-agent adds JWT auth, test-agent tests it."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"ok": True}
