"""The local stand-in for a deployment: the template's functions invoked in-process, its stack on moto.

Modules: ``template`` (the template as data, one function resolved), ``intrinsics`` (CloudFormation
intrinsics), ``invoke`` (the Lambda runtime: environment, handler import, context), ``cli`` (the
``./scripts/local-invoke`` command), ``aws`` (the stack on a moto server), ``sqs_source`` (an SQS
event source mapping), ``e2e`` (inventory entries, trigger events, received notifications) and ``iam``
(the AWS calls each function's code makes, as IAM actions on the template's resources).
Used by tests/, demo/ and bench/; never shipped in a layer.
"""
