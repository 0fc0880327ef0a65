# Spot interruption warnings and rebalance recommendations, delivered to the
# scheduler's POST /v1/notices (which takes EventBridge's event as it is),
# alongside what each agent's IMDS watcher reports.

resource "aws_cloudwatch_event_connection" "scheduler" {
  name               = "hubshift-${var.cluster}-scheduler"
  authorization_type = "API_KEY"
  auth_parameters {
    api_key {
      key   = "Authorization"
      value = "Bearer ${var.scheduler_token}"
    }
  }
}

resource "aws_cloudwatch_event_api_destination" "notices" {
  name                             = "hubshift-${var.cluster}-notices"
  connection_arn                   = aws_cloudwatch_event_connection.scheduler.arn
  invocation_endpoint              = "${var.scheduler_public_url}/v1/notices"
  http_method                      = "POST"
  invocation_rate_limit_per_second = 50
}

resource "aws_cloudwatch_event_rule" "interruptions" {
  name        = "hubshift-${var.cluster}-spot-interruptions"
  description = "EC2 Spot Instance Interruption Warning to hubshift"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Spot Instance Interruption Warning"]
  })
}

resource "aws_cloudwatch_event_rule" "rebalance" {
  name        = "hubshift-${var.cluster}-rebalance"
  description = "EC2 Instance Rebalance Recommendation to hubshift"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Instance Rebalance Recommendation"]
  })
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "events" {
  name_prefix        = "hubshift-${var.cluster}-events-"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "events" {
  statement {
    actions   = ["events:InvokeApiDestination"]
    resources = [aws_cloudwatch_event_api_destination.notices.arn]
  }
}

resource "aws_iam_role_policy" "events" {
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events.json
}

resource "aws_cloudwatch_event_target" "interruptions" {
  rule     = aws_cloudwatch_event_rule.interruptions.name
  arn      = aws_cloudwatch_event_api_destination.notices.arn
  role_arn = aws_iam_role.events.arn
  retry_policy {
    maximum_event_age_in_seconds = 120
    maximum_retry_attempts       = 10
  }
}

resource "aws_cloudwatch_event_target" "rebalance" {
  rule     = aws_cloudwatch_event_rule.rebalance.name
  arn      = aws_cloudwatch_event_api_destination.notices.arn
  role_arn = aws_iam_role.events.arn
}
