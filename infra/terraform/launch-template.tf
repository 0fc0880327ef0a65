resource "aws_security_group" "agent" {
  name_prefix = "hubshift-${var.cluster}-agent-"
  description = "hubshift nodes: the agent API and sessions, from the scheduler and gateway only"
  vpc_id      = var.vpc_id

  ingress {
    description = "agent API"
    from_port   = 7400
    to_port     = 7400
    protocol    = "tcp"
    cidr_blocks = [var.scheduler_cidr]
  }
  ingress {
    description = "sessions (Jupyter servers), through the session gateway"
    from_port   = 8888
    to_port     = 8888
    protocol    = "tcp"
    cidr_blocks = [var.scheduler_cidr]
  }
  ingress {
    description = "moves between nodes (agent to agent streams)"
    from_port   = 7400
    to_port     = 7400
    protocol    = "tcp"
    self        = true
  }
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_launch_template" "agent" {
  name_prefix   = "hubshift-${var.cluster}-agent-"
  image_id      = var.ami_id
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.agent.arn
  }

  # IMDSv2 only, one hop: the agent reads spot notices; sessions, a network
  # namespace further away, cannot reach the node's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  network_interfaces {
    device_index          = 0
    security_groups       = [aws_security_group.agent.id]
    delete_on_termination = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 100
      volume_type           = "gp3"
      throughput            = 500
      encrypted             = true
      kms_key_id            = aws_kms_key.images.arn
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    cluster         = var.cluster
    repo            = var.hubshift_repo
    ref             = var.hubshift_ref
    scheduler_url   = var.scheduler_url
    scheduler_token = var.scheduler_token
    store           = "s3://${aws_s3_bucket.images.bucket}/checkpoints"
    kms_key         = aws_kms_key.images.arn
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = { "hubshift:cluster" = var.cluster }
  }
}
