"""The local stand-in for a deployment: the template's functions invoked in-process, its stack on moto.

Modules: ``template`` (the template as data, one function resolved), ``intrinsics`` (CloudFormation
intrinsics), ``invoke`` (the Lambda runtime: environment, handler import, context), ``cli`` (the
``./scripts/local-invoke`` command), ``aws`` (the stack on a moto server), ``sqs_source`` (an SQS
event source mapping) and ``e2e`` (inventory entries, trigger events, received notifications).
Used by tests/, demo/ and bench/; never shipped in a layer.
"""
