"""Create or upgrade the coordinator's database schema: ``python init_db.py``.

Uses the configured DATABASE_URL (config.py, FETCHFLEET_CONFIG or FETCHFLEET_DATABASE_URL).
Safe to run any number of times: it applies only the migrations not yet applied.
"""

from server import create_app
from server.cli import init_db

if __name__ == "__main__":
    app = create_app()
    with app.app_context():
        init_db()
        from server.extensions import db

        print(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")
