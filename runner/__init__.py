"""Serverless task runner: DynamoDB stream → Lambda → tasks, with Step Functions retries."""

__version__ = "0.1.0"
