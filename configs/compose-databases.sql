-- compose.yaml's PostgreSQL: one database for the Prefect server, one for golive's run store,
-- each with an owner of its own. For a trial only: the passwords are in compose.yaml.
CREATE ROLE prefect LOGIN PASSWORD 'prefect';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE golive LOGIN PASSWORD 'golive';
CREATE DATABASE golive OWNER golive;
