#!/usr/bin/env bash
# The MNIST batch-endpoint walkthrough as one script, in the shape of Azure's own deploy-and-run.sh:
# every command is the `az ml` one with `az ml` replaced by `bepbuild`, and the public sample URI
# replaced by the bundled `sample/` folder. Run it from this folder.
#   BEPBUILD   the command to use (default: bepbuild on PATH)
#   $1         length of the random endpoint suffix (default 5)
set -e
BEPBUILD=${BEPBUILD:-bepbuild}
SAMPLE_INPUT_URI=${SAMPLE_INPUT_URI:-sample}

check_status() {
  STATUS=$($BEPBUILD job show -n "$1" --query status -o tsv)
  echo "$STATUS"
  if [[ $STATUS == "Completed" ]]; then
    echo "Job completed"
  elif [[ $STATUS == "Failed" ]]; then
    echo "Job failed"
    exit 1
  else
    echo "Job status not failed or completed"
    exit 2
  fi
}

ENDPOINT_NAME="mnist-batch"
# A random mixed-case suffix keeps endpoint names unique, as Azure's script makes them.
ENDPOINT_SUFIX=${ENDPOINT_SUFIX:-$(tr -dc 'a-zA-Z0-9' </dev/urandom | fold -w "${1:-5}" | head -n 1 || true)}
ENDPOINT_NAME="$ENDPOINT_NAME-$ENDPOINT_SUFIX"

echo "Registering the first model"
MODEL_NAME='mnist-classifier-torch'
$BEPBUILD model create --name $MODEL_NAME --type "custom_model" --path "deployment-torch/model"

echo "Creating compute"
$BEPBUILD compute create -n batch-cluster --type amlcompute --min-instances 0 --max-instances 5

echo "Creating batch endpoint $ENDPOINT_NAME"
$BEPBUILD batch-endpoint create --file endpoint.yml --name "$ENDPOINT_NAME"

echo "Showing the batch endpoint"
$BEPBUILD batch-endpoint show --name "$ENDPOINT_NAME"

echo "Creating the batch deployment of $ENDPOINT_NAME"
$BEPBUILD batch-deployment create --file deployment-torch/deployment.yml --endpoint-name "$ENDPOINT_NAME" --set-default

echo "Showing the batch deployment"
DEPLOYMENT_NAME="mnist-torch-dpl"
$BEPBUILD batch-deployment show --name $DEPLOYMENT_NAME --endpoint-name "$ENDPOINT_NAME"

echo "Invoking the endpoint on the sample"
JOB_NAME=$($BEPBUILD batch-endpoint invoke --name "$ENDPOINT_NAME" --input "$SAMPLE_INPUT_URI" --input-type uri_folder --query name -o tsv)

echo "Showing the job"
$BEPBUILD job show -n "$JOB_NAME" --web

echo "Streaming the job"
$BEPBUILD job stream -n "$JOB_NAME"
check_status "$JOB_NAME"

echo "Invoking with an output path and file name"
OUTPUT_FILE_NAME=predictions_$RANDOM.csv
OUTPUT_PATH="azureml://datastores/workspaceblobstore/paths/$ENDPOINT_NAME"
JOB_NAME=$($BEPBUILD batch-endpoint invoke --name "$ENDPOINT_NAME" --input "$SAMPLE_INPUT_URI" --output-path "$OUTPUT_PATH" --set output_file_name="$OUTPUT_FILE_NAME" --query name -o tsv)
check_status "$JOB_NAME"

echo "Invoking with per-job overrides"
JOB_NAME=$($BEPBUILD batch-endpoint invoke --name "$ENDPOINT_NAME" --input "$SAMPLE_INPUT_URI" --mini-batch-size 20 --instance-count 5 --query name -o tsv)
$BEPBUILD job stream -n "$JOB_NAME"
check_status "$JOB_NAME"

echo "Downloading the scores"
$BEPBUILD job download --name "$JOB_NAME" --output-name score --download-path ./

echo "Listing the jobs of the deployment"
$BEPBUILD batch-deployment list-jobs --name $DEPLOYMENT_NAME --endpoint-name "$ENDPOINT_NAME" --query "[].name"

echo "Registering the second model"
MODEL_NAME='mnist-classifier-keras'
$BEPBUILD model create --name $MODEL_NAME --type "custom_model" --path "deployment-keras/model"

echo "Creating a second deployment, not the default"
$BEPBUILD batch-deployment create --file deployment-keras/deployment.yml --endpoint-name "$ENDPOINT_NAME"

echo "Invoking the second deployment by name"
DEPLOYMENT_NAME="mnist-keras-dpl"
JOB_NAME=$($BEPBUILD batch-endpoint invoke --name "$ENDPOINT_NAME" --deployment-name $DEPLOYMENT_NAME --input "$SAMPLE_INPUT_URI" --input-type uri_folder --query name -o tsv)
$BEPBUILD job show -n "$JOB_NAME" --web
$BEPBUILD job stream -n "$JOB_NAME"
check_status "$JOB_NAME"

echo "Making it the default"
$BEPBUILD batch-endpoint update --name "$ENDPOINT_NAME" --set defaults.deployment_name=$DEPLOYMENT_NAME
$BEPBUILD batch-endpoint show --name "$ENDPOINT_NAME" --query "{Name:name, Defaults:defaults}"

echo "Invoking the new default"
JOB_NAME=$($BEPBUILD batch-endpoint invoke --name "$ENDPOINT_NAME" --input "$SAMPLE_INPUT_URI" --input-type uri_folder --query name -o tsv)
$BEPBUILD job stream -n "$JOB_NAME"
check_status "$JOB_NAME"

$BEPBUILD batch-deployment delete --name mnist-torch-dpl --endpoint-name "$ENDPOINT_NAME" --yes
$BEPBUILD batch-endpoint delete --name "$ENDPOINT_NAME" --yes
