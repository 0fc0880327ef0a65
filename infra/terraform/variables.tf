variable "region" {
  description = "AWS region of the platform"
  type        = string
  default     = "us-east-1"
}

variable "cluster" {
  description = "Name of this hubshift cluster: tags every instance, prefixes every resource"
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.cluster))
    error_message = "cluster is 1-31 of a-z 0-9 - and starts with a letter or digit."
  }
}

variable "vpc_id" {
  description = "VPC the nodes run in"
  type        = string
}

variable "subnets" {
  description = "Subnet per availability zone where nodes may launch, e.g. { \"us-east-1a\" = \"subnet-0abc\" }"
  type        = map(string)
}

variable "ami_id" {
  description = "AMI for nodes: Debian 12 (criu needs a recent kernel; see README)"
  type        = string
}

variable "instance_types" {
  description = "Instance types hubshift may launch; each needs a price in infra/prices"
  type        = list(string)
  default     = ["r5.large", "r5.xlarge", "r5.2xlarge", "r6i.large", "r6i.xlarge", "m5.xlarge", "m6i.xlarge"]
}

variable "scheduler_url" {
  description = "The scheduler's URL as agents reach it (inside the VPC), e.g. http://10.0.0.10:7300"
  type        = string
}

variable "scheduler_public_url" {
  description = "The scheduler's HTTPS URL as EventBridge reaches it (API destinations need public HTTPS)"
  type        = string
}

variable "scheduler_token" {
  description = "The scheduler's bearer token (agents register with it; EventBridge posts notices with it)"
  type        = string
  sensitive   = true
}

variable "scheduler_cidr" {
  description = "Where the scheduler and the session gateway run: the only source allowed to the agents' API and sessions"
  type        = string
}

variable "hubshift_repo" {
  description = "Git URL nodes clone hubshift from"
  type        = string
}

variable "hubshift_ref" {
  description = "Git ref (tag or commit) of hubshift the nodes run"
  type        = string
}

variable "images_max_age_days" {
  description = "Safety net behind the agents' own retention: any checkpoint object older than this is expired"
  type        = number
  default     = 30
}
