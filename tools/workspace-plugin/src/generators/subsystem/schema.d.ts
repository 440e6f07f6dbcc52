export interface SubsystemGeneratorSchema {
  /** Package name in kebab-case: packages/<name>, npm @kho/<name>. */
  name: string;
  /** Skip the npm install that records the new workspace package in package-lock.json. */
  skipInstall?: boolean;
}
