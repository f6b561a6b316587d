'use strict';

// Every function here gets its own role from serverless-iam-roles-per-function, but the
// framework still emits its shared default role (IamRoleLambdaExecution), holding the
// union of stream and queue permissions with nothing assuming it. This local plugin
// removes that role from the packaged template when no other resource refers to it.
const DEFAULT_ROLE = 'IamRoleLambdaExecution';

class DropUnusedDefaultRole {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:finalize': () => this.dropIfUnused() };
  }

  dropIfUnused() {
    const template = this.serverless.service.provider.compiledCloudFormationTemplate;
    const { [DEFAULT_ROLE]: role, ...others } = template.Resources;
    if (!role) return;
    const referenced = JSON.stringify({ ...template, Resources: others }).includes(
      `"${DEFAULT_ROLE}"`
    );
    if (!referenced) delete template.Resources[DEFAULT_ROLE];
  }
}

module.exports = DropUnusedDefaultRole;
