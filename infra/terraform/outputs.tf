output "images_bucket" {
  value = aws_s3_bucket.images.bucket
}

output "images_kms_key" {
  value = aws_kms_key.images.arn
}

output "agent_launch_template" {
  value = aws_launch_template.agent.name
}

output "scheduler_instance_profile" {
  value = aws_iam_instance_profile.scheduler.name
}

# What `hubshift scheduler --ec2-config FILE` reads:
#   terraform output -raw ec2_config > /etc/hubshift/ec2.yaml
output "ec2_config" {
  value = yamlencode({
    region         = var.region
    cluster        = var.cluster
    launchTemplate = { name = aws_launch_template.agent.name, version = "$Latest" }
    subnets        = var.subnets
    instanceTypes  = var.instance_types
    launchMode     = "fleet"
    agentPort      = 7400
    agentTokenFile = "/etc/hubshift/agent.token"
    dataDir        = "/var/lib/hubshift/agent"
  })
}
