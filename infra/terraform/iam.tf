# Least privilege: agents read and write checkpoint objects under the cluster's
# prefix with the images key and describe instance types, nothing else; the
# scheduler launches, tags, terminates and re-addresses only this cluster's
# instances.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# ---- agents

resource "aws_iam_role" "agent" {
  name_prefix        = "hubshift-${var.cluster}-agent-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "agent" {
  statement {
    sid       = "CheckpointObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.images.arn}/checkpoints/*"]
  }
  statement {
    sid       = "ListCheckpoints"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.images.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["checkpoints/*"]
    }
  }
  statement {
    sid       = "ImagesKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*", "kms:DescribeKey"]
    resources = [aws_kms_key.images.arn]
  }
  # hubshift agent --network-gbps auto: its own type's link (read-only; the action takes no resource).
  statement {
    sid       = "OwnInstanceType"
    actions   = ["ec2:DescribeInstanceTypes"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "agent" {
  role   = aws_iam_role.agent.id
  policy = data.aws_iam_policy_document.agent.json
}

resource "aws_iam_instance_profile" "agent" {
  name_prefix = "hubshift-${var.cluster}-agent-"
  role        = aws_iam_role.agent.name
}

# ---- the scheduler

resource "aws_iam_role" "scheduler" {
  name_prefix        = "hubshift-${var.cluster}-scheduler-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "Catalog"
    actions   = ["ec2:DescribeInstanceTypes", "ec2:DescribeSpotPriceHistory", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeSubnets"]
    resources = ["*"]
  }
  statement {
    sid       = "LaunchFromTheTemplate"
    actions   = ["ec2:CreateFleet", "ec2:RunInstances"]
    resources = ["*"]
    condition {
      test     = "ArnLike"
      variable = "ec2:LaunchTemplate"
      values   = [aws_launch_template.agent.arn]
    }
  }
  statement {
    sid     = "LaunchResources"
    actions = ["ec2:RunInstances", "ec2:CreateFleet"]
    resources = [
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}::image/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:subnet/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:network-interface/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:security-group/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:volume/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*",
      "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:fleet/*",
      aws_launch_template.agent.arn,
    ]
  }
  statement {
    sid       = "TagOnLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances", "CreateFleet"]
    }
  }
  statement {
    sid       = "OnlyThisClustersInstances"
    actions   = ["ec2:TerminateInstances"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/hubshift:cluster"
      values   = [var.cluster]
    }
  }
  statement {
    sid       = "MoveSessionAddresses"
    actions   = ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:Vpc"
      values   = ["arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:vpc/${var.vpc_id}"]
    }
  }
  statement {
    sid       = "HandAgentsTheirRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.agent.arn]
  }
  statement {
    sid       = "SpotServiceRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${data.aws_partition.current.partition}:iam::*:role/aws-service-role/spot.amazonaws.com/*"]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_iam_instance_profile" "scheduler" {
  name_prefix = "hubshift-${var.cluster}-scheduler-"
  role        = aws_iam_role.scheduler.name
}
