"""Flask extensions as module globals, bound to an app in ``create_app`` (the Flask pattern)."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


#: Domain functions commit and views serialize afterwards: keep loaded values usable.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
